"""The worker pool: a supervisor process that forks workers, and the channels to them.

Owns: nothing itself (see its modules).  Never does: import the engine."""
