"""Parts of tools/gen_sd_golden.py; `common` holds the two tiny pipeline definitions."""
