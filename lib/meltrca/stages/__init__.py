"""Stage bodies behind jobs/*.py: each module has DESCRIPTION, add_arguments, execute(ctx)."""
