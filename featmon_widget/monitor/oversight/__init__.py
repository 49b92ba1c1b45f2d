"""Questions asked of the live traffic: is the SAE still faithful (`health`), has the traffic
moved (`drift`), tell me when a feature fires (`watch`); `component` is what the facade
delegates them to."""
