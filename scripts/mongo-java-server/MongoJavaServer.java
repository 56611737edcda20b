/*
 * A MongoDB wire-protocol server for the test suite, used by
 * scripts/backing_services.sh when FerretDB cannot be built.
 *
 * Usage: java -cp ... MongoJavaServer HOST PORT
 *
 * Data lives in memory only: the tests create what they need. The server
 * reports MongoDB 5.0 (wire version 8) so current pymongo releases accept it.
 * SIGTERM shuts it down cleanly.
 */
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.ServerVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

public final class MongoJavaServer {
    public static void main(String[] args) throws InterruptedException {
        if (args.length != 2) {
            System.err.println("usage: MongoJavaServer HOST PORT");
            System.exit(2);
        }
        MongoServer server = new MongoServer(new MemoryBackend().version(ServerVersion.MONGO_5_0));
        server.bind(args[0], Integer.parseInt(args[1]));
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.err.println("mongo-java-server listening on " + server.getConnectionString());
        Thread.currentThread().join();
    }
}
