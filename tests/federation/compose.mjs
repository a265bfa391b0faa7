// Composes subgraph SDL files with both federation composers and prints one JSON
// object: per composer, its errors (code and message) and whether a supergraph came out.
//   node compose.mjs name=file.graphql[=url] name2=file2.graphql[=url] [--supergraph out.graphql]
// (the url is where a router sends the subgraph's requests)
import { readFileSync, writeFileSync } from "node:fs";
import { parse } from "graphql";
import { composeServices as composeApollo } from "@apollo/composition";
import { composeServices as composeGuild } from "@theguild/federation-composition";

const args = process.argv.slice(2);
let supergraphOut = null;
const services = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--supergraph") {
    supergraphOut = args[++i];
    continue;
  }
  const [name, file, ...url] = args[i].split("=");
  const at = url.length ? url.join("=") : `http://${name}.invalid/subgraph`;
  services.push({ name, url: at, typeDefs: parse(readFileSync(file, "utf8")) });
}

const report = (result) => ({
  errors: (result.errors ?? []).map((e) => ({ code: e.extensions?.code ?? null, message: e.message })),
  supergraph: typeof result.supergraphSdl === "string",
});
const apollo = composeApollo(services);
const guild = composeGuild(services);
if (supergraphOut && apollo.supergraphSdl) writeFileSync(supergraphOut, apollo.supergraphSdl);
console.log(JSON.stringify({ apollo: report(apollo), guild: report(guild) }));
