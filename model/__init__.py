"""ML: data set loading, instruction building, candidate recall, scoring, explanations."""
