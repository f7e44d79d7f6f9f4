# Scenario "single": one task per client; FedRouter keeps one local cluster per client.
scenario="single"
split_strategy="multitask_clusters"
n_clusters=1
evaluation_mode="local"
