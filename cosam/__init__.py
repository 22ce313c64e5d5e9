"""cosam: continual adaptation of the Segment Anything Model (CoSAM benchmark, MoDA)."""

__version__ = "0.1.0"
