import { MemoryNetwork, MemoryRouter } from '../../../src/routing/memory.ts'
import { routerConformance } from '../../routing/conformance.ts'

routerConformance('MemoryRouter', async () => {
  const network = new MemoryNetwork()
  const routers = [0, 1, 2, 3].map((i) => new MemoryRouter(network, { id: `node-${i}`, addresses: [`10.0.0.${i + 1}`, `fd00::${i + 1}`] }))
  return {
    routers,
    addressesOf: (r) => [...(r as MemoryRouter).addresses],
    close: async () => { await Promise.all(routers.map(async (r) => await r.close())) },
  }
})
