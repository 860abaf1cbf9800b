"""Student configurations shipped as JSON (load them with ``distill.config.load_config``)."""
