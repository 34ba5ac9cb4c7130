"""ipubsub: a distributed long-poll stream service."""

__version__ = "0.1.0"
SERVICE_NAME = "iPubSub"

__all__ = ["SERVICE_NAME", "__version__"]
