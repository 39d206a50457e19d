"""The ``segshap`` command line: ``main`` dispatches to one module per subcommand (``add_parser``, ``run``).

Subcommands: ``predict``, ``explain``, ``evaluate``, ``demo``, ``organs``, ``cohort``. The CLI is the top layer of the
core: it may import the MRML adapters (``SegSHAPMRML``) lazily, for ``explain --scene``.
"""
