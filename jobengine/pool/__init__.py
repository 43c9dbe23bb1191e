"""The worker pool: a supervisor process that forks workers, and the channels to them."""
