"""The ``organfm`` command line."""
