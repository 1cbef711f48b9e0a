"""WildCAM field station: the station daemon and the `fieldstation` command."""

__version__ = "0.1.0"
