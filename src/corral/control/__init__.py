"""The control plane: services that own its rules and transactions, above the database.

Routes stay thin and call these services; services decide, lock and commit; repositories (in
corral.db) only query, add and flush. Nodes are reached only through corral.node.protocol.
"""
