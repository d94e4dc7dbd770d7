"""autolabel subpackage."""
