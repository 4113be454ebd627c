"""Plain-dict registries for the ``NAME`` keys of model configs.

Each sub-package exposes ``__all__ = make_registry([(name, class), ...])`` (a plain dict, OpenPCDet's layout).
``make_registry`` refuses duplicate names (OpenPCDet once listed a detector twice, silently); ``lookup`` raises
a ``KeyError`` that lists the valid names and the config key that asked.
"""


class RegistryKeyError(KeyError):
    """Unknown or duplicate registry name (message printed without KeyError's quotes)."""

    def __str__(self):
        return str(self.args[0])


def make_registry(pairs, what='registry'):
    """Build a name -> class dict from ``(name, class)`` pairs; a repeated name raises ``RegistryKeyError``."""
    registry = {}
    for name, obj in pairs:
        if name in registry:
            raise RegistryKeyError(f'{what}: duplicate name {name!r} (already maps to {registry[name]!r})')
        registry[name] = obj
    return registry


def lookup(registry, name, what, cfg_key=None):
    """``registry[name]`` or a ``RegistryKeyError`` naming ``cfg_key`` (e.g. ``MODEL.VFE.NAME``) and the valid names."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        where = f' (config key {cfg_key})' if cfg_key else ''
        raise RegistryKeyError(f'unknown {what} {name!r}{where}; valid names: {sorted(registry)}') from None
