"""The Lua scripts of mmaker, one file each with its contract header; shipped with the package as data and
loaded by :mod:`fabric.scripts` (this file only makes the directory installable)."""
