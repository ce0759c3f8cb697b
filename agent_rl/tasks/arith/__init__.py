"""Arithmetic word problems with a calculator: the generator (`generate`), calculator demonstrations (`demos`)
and the math reward (`reward`, also GSM8K's). The tool is `tools/calculator.py`."""
