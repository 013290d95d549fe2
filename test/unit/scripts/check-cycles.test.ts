import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { findCycles } from '../../../scripts/check-cycles.ts'

const src = fileURLToPath(new URL('../../../src/', import.meta.url))

describe('check-cycles', () => {
  let dir = ''
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'check-cycles-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  async function tree (name: string, files: Record<string, string>): Promise<string> {
    const root = join(dir, name)
    for (const [path, text] of Object.entries(files)) {
      await mkdir(dirname(join(root, path)), { recursive: true })
      await writeFile(join(root, path), text)
    }
    return root
  }

  it('finds no cycle in src/', async () => {
    assert.deepEqual(await findCycles(src), [])
  })

  it('reports a cycle through a dynamic import with its path', async () => {
    const root = await tree('dynamic', {
      'cli/run.ts': "import { commands } from './spec.ts'\nexport const load = async () => (await import('./cmd.ts')).cmd\n",
      'cli/spec.ts': 'export const commands = []\n',
      'cli/cmd.ts': "import { ExitCode } from './run.ts'\nexport const cmd = () => ExitCode\n",
    })
    assert.deepEqual(await findCycles(root), [['cli/cmd.ts', 'cli/run.ts', 'cli/cmd.ts']])
  })

  it('follows export-from, import type and folders, and ignores imports in comments and strings', async () => {
    const root = await tree('reexport', {
      'a/index.ts': "export { b } from '../b/index.ts'\n",
      'b/index.ts': "import type { A } from '../a/index.ts'\nexport const b = 1\n",
      'c/one.ts': "// import { two } from './two.ts'\nexport const s = \"import('./two.ts')\"\n",
      'c/two.ts': "import { s } from './one.ts'\nexport const two = s\n",
      'd/self.ts': "export * from './self.ts'\n",
    })
    assert.deepEqual(await findCycles(root), [
      ['a/index.ts', 'b/index.ts', 'a/index.ts'],
      ['d/self.ts', 'd/self.ts'],
    ])
  })

  it('ignores packages and imports of files outside the tree', async () => {
    const root = await tree('outside', {
      'x.ts': "import ts from 'typescript'\nimport { y } from '../elsewhere/y.ts'\nexport const x = 1\n",
    })
    assert.deepEqual(await findCycles(root), [])
  })
})
