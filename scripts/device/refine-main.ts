/**
 * The refine pipeline's entry in the device kit's bundle. The bundle is built with
 * `require.main` defined away, because in one bundle every module's `require.main === module`
 * would be true and any pipeline module in the bundle would run its own main as well.
 */
import { refine } from '../../pipelines/refine';
import { runMain } from '../../runtime/cli';

runMain(() => refine(process.argv.slice(2)).then(() => undefined));
