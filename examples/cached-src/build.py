# An input file of examples/cached.yaml: editing it reruns `build` and `test`, not `deps`.
print("built")
