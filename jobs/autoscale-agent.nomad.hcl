# The nomad-triton autoscale agent as a Nomad service: two instances for high availability (only
# the holder of the Nomad variable lock acts; the other takes over within the lock TTL).
#
# Token: a client token carrying only the policy in jobs/autoscale-agent.acl.hcl, kept in the
# job's own Nomad variable (tasks may read their job's variables without further ACL rules):
#   nomad acl policy apply nomad-triton-autoscaler jobs/autoscale-agent.acl.hcl
#   nomad acl token create -name autoscaler -policy nomad-triton-autoscaler   # note its Secret ID
#   nomad var put nomad/jobs/nomad-triton-autoscaler token=<Secret ID>
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

      # NOMAD_TOKEN from the job's variable, as an environment variable (never on the command line).
      template {
        data        = "NOMAD_TOKEN={{ with nomadVar \"nomad/jobs/nomad-triton-autoscaler\" }}{{ .token }}{{ end }}"
        destination = "secrets/nomad.env"
        env         = true
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
