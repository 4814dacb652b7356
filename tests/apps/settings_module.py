"""Settings loaded by ``app.config_from_object("tests.apps.settings_module")``."""

import os  # noqa: F401 - a module attribute that must not become a setting

task_default_queue = "from-module"
result_expires = 120
