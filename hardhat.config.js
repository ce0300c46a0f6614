// Hardhat 2 configuration: compiles contracts/ offline with the solcjs build in node_modules
// and serves `npx hardhat node`. Foundry tests (contracts/test/**) are compiled by forge only.
//
// The compiler settings below are mirrored by client/contracts.py (SOLC_SETTINGS) and
// foundry.toml; tests/test_contract_build.py fails if hardhat's and py-solc-x's outputs differ.
const path = require("path");
const { subtask } = require("hardhat/config");
const {
  TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD,
  TASK_COMPILE_SOLIDITY_GET_SOURCE_PATHS,
} = require("hardhat/builtin-tasks/task-names");

const SOLC_VERSION = "0.8.30";

// Never download a compiler: use node_modules/solc (the same release as wasm).
subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) return runSuper(args);
  const solc = require("solc");
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: args.solcVersion,
    longVersion: solc.version(),
  };
});

// contracts/test/** holds Foundry tests (forge-std style); they are not part of the product.
subtask(TASK_COMPILE_SOLIDITY_GET_SOURCE_PATHS, async (args, hre, runSuper) => {
  const paths = await runSuper(args);
  const testDir = path.join(hre.config.paths.sources, "test") + path.sep;
  return paths.filter((p) => !p.startsWith(testDir) && !p.endsWith(".t.sol"));
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
    },
  },
  paths: {
    sources: "./contracts",
    artifacts: "./artifacts",
    cache: "./cache",
  },
  networks: {
    hardhat: {
      hardfork: "cancun",
      chainId: 31337,
    },
  },
};
