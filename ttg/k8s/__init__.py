"""The Kubernetes runtime: manifests rendered from Jinja2 templates shipped in the package (``templates/``).

One run = one broker (StatefulSet with a volume, auth from a generated Secret, a
NetworkPolicy that admits only the run's TTG pods), one in-cluster coordinator
Job (results on a PVC), and one worker Job: the work-queue pattern in queue
mode, an Indexed Job in static mode. Everything carries ``app.kubernetes.io/*``
labels and ``ttg.dev/run-id``, which is how ``ttg k8s status|down|cleanup`` find
what is TTG's and touch nothing else.
"""
