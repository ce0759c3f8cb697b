# sglang 0.5.17 registers configs that this newer transformers already has: let those registrations pass
try:
    from transformers.models.auto import configuration_auto as _ca
    _orig = _ca._LazyConfigMapping.register
    def _register(self, key, value, exist_ok=False):
        return _orig(self, key, value, exist_ok=True)
    _ca._LazyConfigMapping.register = _register
except Exception:
    pass
