"""Quality control: Great Expectations gates, gold-standard comparison, agreement and audit sampling."""
