# Tests and nbval run every notebook with its short settings, wherever they run (the notebooks read
# DLMIE_QUICK, or CI=true); full quality is `make notebooks`' job. Set before any kernel starts.
import os

os.environ.setdefault("DLMIE_QUICK", "1")
