# The nomad-triton autoscale agent as a Nomad service: two instances for high availability (only
# the holder of the Nomad variable lock acts; the other takes over within the lock TTL).
#
# Token: the agent authenticates with its workload identity (Nomad 1.7+), to which the least-
# privilege policy in jobs/autoscale-agent.acl.hcl is attached:
#   nomad acl policy apply -namespace default -job nomad-triton-autoscaler \
#     nomad-triton-autoscaler jobs/autoscale-agent.acl.hcl
#   nomad job run -var image=registry.example.com/nomad-triton:0.1.0 jobs/autoscale-agent.nomad.hcl
# It scales the groups of its own namespace whose scaling policy is nomad-triton's (see
# docs/autoscale-agent.md). /metrics and /healthz are served on the `http` port.

variable "image" {
  type        = string
  description = "An image with the nomad-triton CLI (the project's Dockerfile builds one)."
}

job "nomad-triton-autoscaler" {
  type = "service"

  group "agent" {
    count = 2

    # Two instances on two machines, so one machine going away never takes both.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      port "http" {}
    }

    service {
      name     = "nomad-triton-autoscaler"
      provider = "nomad"
      port     = "http"
      tags     = ["metrics"]

      check {
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    update {
      max_parallel     = 1
      min_healthy_time = "10s"
      auto_revert      = true
    }

    task "agent" {
      driver = "docker"

      config {
        image      = var.image
        entrypoint = ["nomad-triton"]
        args = [
          "autoscale", "agent",
          "--listen", "${NOMAD_IP_http}:${NOMAD_PORT_http}",
          "--lock-ttl", "15",
        ]
        ports = ["http"]
      }

      # NOMAD_TOKEN is this task's workload identity token, carrying the ACL policy above.
      identity {
        env = true
      }

      # The Nomad agent on the same machine (with TLS: https:// plus NOMAD_CACERT).
      env {
        NOMAD_ADDR = "http://${attr.unique.network.ip-address}:4646"
      }

      kill_timeout = "20s" # SIGTERM: stop evaluating, release the lock so the standby leads at once

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
