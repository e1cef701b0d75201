"""The workers' tests share the Kubernetes API stand-in (`kubernetes_stand_in`, beside this file); test modules
import it by module name."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
