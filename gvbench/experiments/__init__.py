"""The field's benchmark tasks as experiment plugins, each registered by entry point exactly as
a user's package registers its own (``pyproject.toml``); nothing outside this package names
them."""
