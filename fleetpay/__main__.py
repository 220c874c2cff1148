from fleetpay.cli import main

main()
