// Compiles the credit registry with solc-js (the npm package `solc`) and
// writes the ABI and bytecode that funion's Rust code embeds, so that
// `cargo build` needs no Node. Run `npm ci` in contracts/ first
// (scripts/setup-chain does).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");
const here = path.dirname(fileURLToPath(import.meta.url));

const input = {
  language: "Solidity",
  sources: {
    "CreditRegistry.sol": { content: fs.readFileSync(path.join(here, "src/CreditRegistry.sol"), "utf8") },
    "CommitmentLog.sol": { content: fs.readFileSync(path.join(here, "src/CommitmentLog.sol"), "utf8") },
  },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.bytecode.linkReferences"] } },
  },
};

function findImports(name) {
  const file = path.join(here, "node_modules", name);
  if (!fs.existsSync(file)) return { error: `not found: ${name}` };
  return { contents: fs.readFileSync(file, "utf8") };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);

const out = path.join(here, "build");
// Unchanged files keep their modification time, so cargo does not rebuild
// what embeds them.
function write(file, text) {
  const target = path.join(out, file);
  if (fs.existsSync(target) && fs.readFileSync(target, "utf8") === text) return;
  fs.writeFileSync(target, text);
}
fs.mkdirSync(out, { recursive: true });
const wanted = {
  "CreditRegistry.sol": ["CreditRegistry"],
  "CommitmentLog.sol": ["CommitmentLog"],
  "poseidon-solidity/PoseidonT2.sol": ["PoseidonT2"],
  "poseidon-solidity/PoseidonT3.sol": ["PoseidonT3"],
};
for (const [file, names] of Object.entries(wanted)) {
  for (const name of names) {
    const c = output.contracts[file][name];
    write(`${name}.abi.json`, JSON.stringify(c.abi, null, 1) + "\n");
    write(`${name}.bin`, c.evm.bytecode.object + "\n");
    const links = c.evm.bytecode.linkReferences || {};
    if (Object.keys(links).length) {
      write(`${name}.links.json`, JSON.stringify(links, null, 1) + "\n");
    }
  }
}
console.log(`compiled with solc ${solc.version()} into ${out}`);
