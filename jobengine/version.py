"""The version of jobengine (one place: the package, jobctl and the control API read it).

Owns: the version string.  Never does: anything else."""

__version__ = "0.1.0"
