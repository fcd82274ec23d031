"""massshift: did RL teach a language model new facts, or move mass onto facts it held?"""

__version__ = "0.1.0"
