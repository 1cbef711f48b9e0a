"""WildCAM cloud sync endpoints: the service stations upload captures to (`fieldstation-cloud`)."""

__version__ = "0.1.0"
