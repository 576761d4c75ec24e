"""Tools: eight real tools plus chain-of-thought, run in a sandbox.

Public surface: ``discover`` / ``get_tool`` (the registry), ``Sandbox`` (pre-forked,
limited execution), ``run_batch`` (bounded-parallel execution of many calls).
"""
