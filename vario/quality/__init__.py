"""Dataset tests: coverage, bias, balance, edge cases and integrity over a batch's tables, their
thresholds files, and the HTML report of their results."""
