# Scenario "interference": two tasks per client (tasks i and i+1), two local clusters each.
scenario="interference"
split_strategy="multitask_multi_domain"
n_clusters=2
evaluation_mode="local"
