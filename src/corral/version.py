"""corral's version, in a module of its own: anything may import it without pulling in the
package's public API (`corral/__init__.py` reaches every layer)."""

__version__ = "0.1.0"
