"""Infrastructure shared by every stage: configs, clip format, media I/O, training engine, rasterizer."""

__version__ = "0.1.0"
