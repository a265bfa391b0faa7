// Hive Gateway over council gateways: each council decides consent for its own records
// and audits the end user, so the caller's token, purpose of use and break-glass reason
// go to every subgraph request (and the request id, to join the councils' audit trails).
import { defineConfig } from "@graphql-hive/gateway";
import { GraphQLError } from "graphql";
import { maskError } from "graphql-yoga";

const propagated = ["authorization", "x-purpose-of-use", "x-break-glass-reason", "x-request-id"];

export const gatewayConfig = defineConfig({
  // A council that cannot be reached is named (code SUBGRAPH_UNAVAILABLE), so that a
  // portal can say which council's part is missing; the failed request, which holds
  // the caller's variables (NHS numbers), and the council's address stay here. Any
  // other error is masked as Hive Gateway masks by default (graphql-yoga's maskError):
  // the councils' own errors and codes pass unchanged, anything unexpected does not.
  maskedErrors: {
    maskError(error, message, isDev) {
      const service = error?.extensions?.serviceName;
      if (error?.extensions?.code === "SUBREQUEST_HTTP_ERROR" && typeof service === "string") {
        return new GraphQLError(`the ${service} gateway is unavailable`, {
          path: error.path,
          nodes: error.nodes,
          extensions: { code: "SUBGRAPH_UNAVAILABLE", serviceName: service },
        });
      }
      return maskError(error, message, isDev);
    },
  },
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
