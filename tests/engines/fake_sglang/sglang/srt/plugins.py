def load_plugins():
    pass
