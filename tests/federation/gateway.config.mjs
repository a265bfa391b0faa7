// Hive Gateway over council gateways: each council decides consent for its own records
// and audits the end user, so the caller's token, purpose of use and break-glass reason
// go to every subgraph request (and the request id, to join the councils' audit trails).
import { defineConfig } from "@graphql-hive/gateway";

const propagated = ["authorization", "x-purpose-of-use", "x-break-glass-reason", "x-request-id"];

export const gatewayConfig = defineConfig({
  propagateHeaders: {
    fromClientToSubgraphs({ request }) {
      const headers = {};
      for (const name of propagated) {
        const value = request.headers.get(name);
        if (value) headers[name] = value;
      }
      return headers;
    },
  },
});
