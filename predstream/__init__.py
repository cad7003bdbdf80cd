"""predstream: the command line and the local stack, on top of ``schemas``, ``producer``
and ``consumer``.

The library lives in the three top-level packages; this one only wires them into the
``predstream`` command (:mod:`predstream.cli`) and runs the embedded local stack.
"""

__all__: list[str] = []
