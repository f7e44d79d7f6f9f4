# Scenario "generalization": clients train as in "single" and are tested on every task,
# routing among all global clusters.
scenario="generalization"
split_strategy="multitask_clusters"
n_clusters=1
evaluation_mode="global"
