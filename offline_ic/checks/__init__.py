"""Pre-boot checks: results, policy, report formats."""
