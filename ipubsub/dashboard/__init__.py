"""The operators' dashboard at ``/dashboard/``: plain HTML, CSS and JS files
shipped in this package (no CDN, no build step), fed by JSON this node
gathers from the cluster.  See docs/design.md, "Operators' view"."""

from .routes import Dashboard

__all__ = ["Dashboard"]
