"""Studies: several training arms compared across paired seeds, and the statistics of that comparison."""
