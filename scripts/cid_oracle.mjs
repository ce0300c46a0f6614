import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { readFileSync } from 'node:fs'
const bs = { put: async (cid, bytes) => cid }
// stdin: lines "path chunkSize profile"
const lines = readFileSync(0, 'utf8').trim().split('\n')
for (const line of lines) {
  const [path, cs, prof] = line.split(' ')
  const v0 = prof === 'v0'
  const opts = { cidVersion: v0 ? 0 : 1, rawLeaves: !v0, leafType: 'file', reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize: Number(cs) }), layout: balanced({ maxChildrenPerNode: 174 }) }
  const content = readFileSync(path)
  let last
  for await (const e of importer([{ content }], bs, opts)) last = e
  console.log(line, last.cid.toString())
}
