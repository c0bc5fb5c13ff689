"""What decides the country: zero-shot country classification, relevance maps and their faithfulness."""
