"""Holds this package's ndarray class, so submodules find it even when a test puts
another module into sys.modules['cupy']."""
ndarray = None
