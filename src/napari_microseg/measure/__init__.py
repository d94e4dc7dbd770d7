"""measure subpackage."""
