#!/usr/bin/env bash
# Weir's Kubernetes procedures (RUNBOOK.md, "Kubernetes"), from a checkout of this repository
# with kubectl pointed at the cluster:
#
#   deploy/k8s/rollout.sh migrate REGISTRY/weir:NEW     # 1. migrations first, once
#   deploy/k8s/rollout.sh roll REGISTRY/weir:NEW        # 2. the Deployment, pod by pod
#   deploy/k8s/rollout.sh check                         # 3. pods and restarts
#   deploy/k8s/rollout.sh undo                          # back out (the schema stays migrated)
#   deploy/k8s/rollout.sh restart                       # after editing only the ConfigMap
#
# Object names are those of deploy/k8s (namespace weir, Deployment and container weir, Job
# weir-migrate); host/tests/process/deploy.rs runs every step against a recording kubectl and
# checks each object it names exists in the manifests. (No cluster runs in CI.)
set -euo pipefail
cd "$(dirname "$0")"
NS=weir
step="${1:?usage: rollout.sh migrate|roll IMAGE | check | undo | restart}"
case "$step" in
  migrate)
    image="${2:?the new image, e.g. registry.example.com/weir:0.2.0}"
    kubectl -n "$NS" delete job weir-migrate --ignore-not-found
    # The Job's image is replaced by the new one; everything else is migrate-job.yaml.
    sed "s|image: weir:.*|image: $image|" migrate-job.yaml | kubectl apply -f -
    kubectl -n "$NS" wait --for=condition=complete job/weir-migrate --timeout=10m
    kubectl -n "$NS" logs job/weir-migrate
    ;;
  roll)
    image="${2:?the new image}"
    kubectl apply -k .
    kubectl -n "$NS" set image deployment/weir weir="$image"
    kubectl -n "$NS" rollout status deployment/weir --timeout=15m
    ;;
  check)
    kubectl -n "$NS" get pods -l app.kubernetes.io/name=weir
    kubectl -n "$NS" get deployment weir
    ;;
  undo)
    kubectl -n "$NS" rollout undo deployment/weir
    kubectl -n "$NS" rollout status deployment/weir --timeout=15m
    ;;
  restart)
    kubectl apply -k .
    kubectl -n "$NS" rollout restart deployment/weir
    kubectl -n "$NS" rollout status deployment/weir --timeout=15m
    ;;
  *)
    echo "unknown step $step" >&2
    exit 2
    ;;
esac
