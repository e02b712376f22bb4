"""The `corral` command line.

A CLI process is short-lived: collecting garbage while hundreds of modules are imported only
costs start-up time, so collection is off until `main()` has frozen what the imports created.
"""

import gc

gc.disable()
