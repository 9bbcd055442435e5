"""Hand-written data for the task build (written for tlens_icl; facts only).

Lists of (input, output[, alternatives]) pairs and curation tables used by
_build_knowledge.py.  Keep entries unambiguous and well known.
"""

# ---------------------------------------------------------------------------------------------
# Countries: UN member states (ISO 3166-1 alpha-2) plus the Holy See.
UN_MEMBERS = """
AF AL DZ AD AO AG AR AM AU AT AZ BS BH BD BB BY BE BZ BJ BT BO BA BW BR BN BG BF BI CV KH CM CA
CF TD CL CN CO KM CG CD CR CI HR CU CY CZ DK DJ DM DO EC EG SV GQ ER EE SZ ET FJ FI FR GA GM GE
DE GH GR GD GT GN GW GY HT HN HU IS IN ID IR IQ IE IL IT JM JP JO KZ KE KI KP KR KW KG LA LV LB
LS LR LY LI LT LU MG MW MY MV ML MT MH MR MU MX FM MD MC MN ME MA MZ MM NA NR NP NL NZ NI NE NG
MK NO OM PK PW PA PG PY PE PH PL PT QA RO RU RW KN LC VC WS SM ST SA SN RS SC SL SG SK SI SB SO
ZA SS ES LK SD SR SE CH SY TJ TZ TH TL TG TO TT TN TR TM TV UG UA AE GB US UY UZ VU VE VN YE ZM
ZW VA
""".split()

# Display-name overrides: ISO2 -> (name, [alternative names]).
COUNTRY_NAMES = {
    "BS": ("Bahamas", ["The Bahamas"]),
    "GM": ("Gambia", ["The Gambia"]),
    "MK": ("North Macedonia", ["Macedonia"]),
    "SZ": ("Eswatini", ["Swaziland"]),
    "CZ": ("Czech Republic", ["Czechia"]),
    "CI": ("Ivory Coast", ["Côte d'Ivoire"]),
    "TL": ("East Timor", ["Timor-Leste"]),
    "FM": ("Micronesia", ["Federated States of Micronesia"]),
    "VA": ("Vatican City", ["Holy See"]),
    "TR": ("Turkey", ["Türkiye"]),
    "MM": ("Myanmar", ["Burma"]),
    "CV": ("Cape Verde", ["Cabo Verde"]),
    "US": ("United States", ["USA", "United States of America"]),
    "GB": ("United Kingdom", ["UK", "Britain", "Great Britain"]),
    "CG": ("Republic of the Congo", ["Congo"]),
    "CD": ("Democratic Republic of the Congo", ["DR Congo", "Congo"]),
    "ST": ("São Tomé and Príncipe", ["Sao Tome and Principe"]),
}

# Capital overrides: ISO2 -> (capital, [alternatives]).  Checked against current facts.
CAPITALS = {
    "KZ": ("Astana", ["Nur-Sultan"]),
    "SZ": ("Mbabane", ["Lobamba"]),
    "BO": ("Sucre", ["La Paz"]),
    "LK": ("Sri Jayawardenepura Kotte", ["Colombo", "Kotte"]),
    "AG": ("St. John's", ["Saint John's"]),
    "US": ("Washington, D.C.", ["Washington", "Washington D.C.", "Washington DC"]),
    "VA": ("Vatican City", []),
    "SM": ("San Marino", ["City of San Marino"]),
    "ZA": ("Pretoria", ["Cape Town", "Bloemfontein"]),
    "CI": ("Yamoussoukro", ["Abidjan"]),
    "TZ": ("Dodoma", ["Dar es Salaam"]),
    "BJ": ("Porto-Novo", ["Cotonou"]),
    "MY": ("Kuala Lumpur", ["Putrajaya"]),
    "KI": ("South Tarawa", ["Tarawa"]),
    "MM": ("Naypyidaw", ["Nay Pyi Taw", "Naypyitaw"]),
    "YE": ("Sana'a", ["Sanaa"]),
    "UA": ("Kyiv", ["Kiev"]),
    "GD": ("St. George's", ["Saint George's"]),
    "NL": ("Amsterdam", []),
    "CH": ("Bern", ["Berne"]),
    "PW": ("Ngerulmud", ["Melekeok"]),
    "NR": ("Yaren", []),
    "TO": ("Nuku'alofa", []),
}

# Currency overrides (ISO 4217 codes): ISO2 -> [primary, other accepted...].  None = drop.
CURRENCIES = {
    "BY": ["BYN"],
    "HR": ["EUR"],
    "MR": ["MRU"],
    "ST": ["STN"],
    "SL": ["SLE"],
    "VE": ["VES"],
    "ZM": ["ZMW"],
    "ZW": None,  # changed currency several times recently (ZWL, ZiG): left out
    "CH": ["CHF"],
    "CL": ["CLP"],
    "CU": ["CUP"],
    "US": ["USD"],
    "UY": ["UYU"],
    "BO": ["BOB"],
    "SV": ["USD"],
    "PA": ["PAB", "USD"],
    "HT": ["HTG"],
    "BT": ["BTN", "INR"],
    "LS": ["LSL", "ZAR"],
    "NA": ["NAD", "ZAR"],
}
CURRENCY_ALIASES = {
    "GBP": ["Pound Sterling", "Pound"],
    "USD": ["United States Dollar", "Dollar"],
    "EUR": ["Euro"],
}

# ---------------------------------------------------------------------------------------------
# Antonym curation: undirected pairs that WordNet lists but that are sense-specific, technical
# or otherwise poor demonstrations of antonymy.
ANTONYM_BLOCK = """
act-refrain active-quiet active-extinct admit-reject admit-exclude advance-back ahead-back all-no
no-some all-some alternating-direct attend-miss bounce-clear bore-interest break-make break-keep
center-right center-left change-stay cool-heat conventional-nuclear credit-cash cubic-linear
concentrated-distributed distribution-concentration confined-invasive defend-prosecute
defense-prosecution differ-equal dry-sweet emotional-cerebral end-middle exempt-enforce
express-local first-second foot-head forget-mind functional-organic gain-reduce
geographic-magnetic green-ripe homosexual-bisexual horizontal-inclined host-parasite ignore-know
individual-common induced-spontaneous integrate-differentiate issue-recall keep-lose lead-deficit
lean-rich let-prevent live-recorded local-general location-studio lose-profit lost-saved
middle-early middle-late middle-beginning miss-have natural-flat natural-sharp oral-anal out-safe
overhead-surface passing-running preparation-resolution preserved-fresh raise-level refresh-tire
run-idle running-standing safe-out salty-fresh sharp-flat sink-source sit-lie soft-hardened
soft-loud sparkling-still stay-move stay-depart side-top side-bottom rear-head theoretical-empirical
thin-full vocal-instrumental work-idle whole-half worn-new medical-surgical dramatic-lyric
dove-hawk bull-bear hungry-thirsty walk-ride con-pro anti-pro record-erase blur-focus delay-rush
quiet-active moving-still free-bound have-lack mind-forget native-adopted dead-recorded
solid-hollow particular-universal particular-general combined-separate joint-separate
""".split()
# Preferred output where the most frequent antonym is not the best demonstration.
ANTONYM_PREFER = {
    "big": "small",
    "dead": "alive",
    "full": "empty",
    "live": "dead",
    "right": "left",
    "old": "young",
    "soft": "hard",
    "sweet": "sour",
    "present": "absent",
    "back": "front",
    "start": "stop",
    "straight": "curved",
    "open": "closed",
    "light": "dark",
    "local": "national",
    "new": "old",
    "thin": "thick",
    "dull": "bright",
}

# Synonym curation: inputs accepted after reading the WordNet-derived candidates.  Value =
# forced output (None = the most frequent mutual-first-sense synonym).
SYNONYM_KEEP = {
    w: None
    for w in """
answer ask autumn begin big brave build buy car cheap child choose city corn die doctor
finish fix forest gray hard help hide hospital husband large lawyer marry remember round shop sick
singer small sofa snake start stay stone student teach teacher tiny wide writer really truly often
frequently almost nearly wrong incorrect chance opportunity film movie happen occur needed required
finally eventually usually normally source origin amount sum amazing astonishing enjoy perhaps
maybe financial fiscal seem appear difficult huge vast below beneath recently lately store expect
anticipate certainly surely quickly rapidly speed velocity kid absolutely utterly immediately
instantly definitely author fear fright battle thus therefore notice observe comment remark purpose
nation country appear wonderful marvelous partner spouse mostly largely owner proprietor remain
supply provide apparently seemingly obviously evidently extremely highly require need shut close
possibly aid assist investigation probe responsibility duty slightly somewhat suggest propose
injury religion faith strategy scheme mention cite victory triumph assistant helper entirely
completely ill purchase terrible dreadful ensure assure attorney behavior conduct honestly frankly
exercise workout joke gag mistake error holiday vacation relatively comparatively approximately
roughly fault basically essentially incredible unbelievable drunk intoxicated mainly primarily
scared frightened threat menace assistance deserve merit reasonable sensible heaven paradise rent
lease achieve attain assume presume opposition resistance permanent lasting brilliant superb
surely print publish quit cease broad hardly barely hidden concealed respond react defeat overcome
reply neighborhood vicinity ignore disregard select woods deeply profoundly naked nude reveal
uncover afterwards rarely seldom illness sickness repair buddy pal poetry verse recall discover
detect hence increasingly progressively incredibly unbelievably creek brook merely simply fate
destiny salary wage grateful thankful courage bravery similarly likewise talented gifted tale story
recover regain enormous tremendous panic terror nevertheless nonetheless furthermore moreover
strict rigorous subsequently excess surplus wealthy affluent precisely exactly prisoner captive
cargo freight basement cellar carpet rug examine physician beloved darling couch decrease diminish
annually yearly creature quietly softly torture torment urgent pressing scream yell tragedy
catastrophe closet cupboard companion comrade mandatory compulsory eternal everlasting noon midday
rage fury belly abdomen advise counsel diary journal disappear vanish teenager adolescent fabric
cloth grief heartbreak assess evaluate notable noteworthy cemetery graveyard halfway midway alter
slim slender timber lumber infant hazard fortunately luckily forbidden prohibited feast banquet
purse handbag automobile leap threaten bloom blossom pistol handgun glance peek stare gaze
calculate compute dominate prevail forehead brow fulfill accomplish vicious twilight dusk scent
fragrance perfume luggage baggage seize clutch cooperate collaborate relieve alleviate thrive
flourish moist damp forbid prohibit gigantic mammoth differentiate distinguish interrupt disrupt
commence inexpensive conceal boast brag despise disdain metropolis
""".split()
}
SYNONYM_KEEP.update({"cruel": "brutal", "famous": "renowned", "jump": "leap", "funny": "comic"})

# ---------------------------------------------------------------------------------------------
# Mass nouns and plural-only nouns among the common words (no natural plural demonstration).
MASS_NOUNS = set(
    """
water rice milk sugar salt pepper butter honey beef meat bread cheese gold silver iron oil money
snow rain sand mud smoke ice blood soap tea coffee juice wine beer grass hair soup corn music wood
metal paper glass fire earth sky sun moon weather news furniture information advice traffic
luggage homework equipment evidence knowledge research health happiness justice electricity
""".split()
)
# Left out of present_past: modal and auxiliary verbs (no ordinary past-tense demonstration),
# homographs of other verbs' pasts (found), and archaic-first pasts (bid -> bade).
NOT_VERBS = set("can could may might must shall should will would ought be have do need dare found bid".split())

# ---------------------------------------------------------------------------------------------
# product -> company (hand-written; well-known products whose maker is unambiguous; inputs never
# contain the company name).  Ownership as of 2025.
PRODUCT_COMPANY = [
    ("iPhone", "Apple"), ("iPad", "Apple"), ("MacBook", "Apple"), ("iPod", "Apple"), ("iTunes", "Apple"),
    ("Safari", "Apple"), ("AirPods", "Apple"), ("Siri", "Apple"), ("iMac", "Apple"), ("Macintosh", "Apple"),
    ("Final Cut Pro", "Apple"),
    ("Windows", "Microsoft"), ("Xbox", "Microsoft"), ("Excel", "Microsoft"), ("PowerPoint", "Microsoft"),
    ("Outlook", "Microsoft"), ("Bing", "Microsoft"), ("Skype", "Microsoft"), ("LinkedIn", "Microsoft"),
    ("GitHub", "Microsoft"), ("Visual Studio", "Microsoft"), ("HoloLens", "Microsoft"), ("Azure", "Microsoft"),
    ("Hotmail", "Microsoft"), ("Minecraft", "Microsoft"),
    ("Android", "Google"), ("Gmail", "Google"), ("Chrome", "Google"), ("YouTube", "Google"), ("Waze", "Google"),
    ("Fitbit", "Google"),
    ("Kindle", "Amazon"), ("Alexa", "Amazon"), ("Audible", "Amazon"), ("Twitch", "Amazon"), ("Whole Foods", "Amazon"),
    ("Instagram", "Meta"), ("WhatsApp", "Meta"), ("Oculus", "Meta"),
    ("ChatGPT", "OpenAI"), ("Snapchat", "Snap"), ("TikTok", "ByteDance"),
    ("PlayStation", "Sony"), ("Walkman", "Sony"), ("Bravia", "Sony"), ("Xperia", "Sony"), ("Aibo", "Sony"),
    ("Game Boy", "Nintendo"), ("Wii", "Nintendo"), ("Super Mario", "Nintendo"), ("Zelda", "Nintendo"),
    ("Pac-Man", "Bandai Namco"), ("Tamagotchi", "Bandai Namco"), ("Fortnite", "Epic Games"),
    ("World of Warcraft", "Blizzard"), ("Grand Theft Auto", "Rockstar Games"), ("The Sims", "Electronic Arts"),
    ("Call of Duty", "Activision"),
    ("Corolla", "Toyota"), ("Camry", "Toyota"), ("Prius", "Toyota"), ("Land Cruiser", "Toyota"),
    ("Civic", "Honda"), ("Accord", "Honda"), ("Mustang", "Ford"), ("Fiesta", "Ford"), ("F-150", "Ford"),
    ("Passat", "Volkswagen"), ("Jetta", "Volkswagen"), ("Model S", "Tesla"), ("Model 3", "Tesla"),
    ("Corvette", "Chevrolet"), ("Camaro", "Chevrolet"), ("911", "Porsche"), ("Cayenne", "Porsche"),
    ("Micra", "Nissan"), ("Clio", "Renault"), ("A380", "Airbus"), ("Learjet", "Bombardier"), ("Vespa", "Piaggio"),
    ("Big Mac", "McDonald's"), ("Happy Meal", "McDonald's"), ("Whopper", "Burger King"), ("Frappuccino", "Starbucks"),
    ("Coke", "Coca-Cola"), ("Sprite", "Coca-Cola"), ("Fanta", "Coca-Cola"), ("Dasani", "Coca-Cola"),
    ("Powerade", "Coca-Cola"), ("Minute Maid", "Coca-Cola"), ("Smartwater", "Coca-Cola"),
    ("Pepsi", "PepsiCo"), ("Doritos", "PepsiCo"), ("Gatorade", "PepsiCo"), ("Lay's", "PepsiCo"), ("Cheetos", "PepsiCo"),
    ("Mountain Dew", "PepsiCo"), ("Aquafina", "PepsiCo"), ("Quaker Oats", "PepsiCo"),
    ("Nescafé", "Nestlé"), ("Nespresso", "Nestlé"), ("Perrier", "Nestlé"), ("San Pellegrino", "Nestlé"), ("Maggi", "Nestlé"),
    ("Oreo", "Mondelez"), ("Toblerone", "Mondelez"), ("Milka", "Mondelez"), ("Ritz", "Mondelez"),
    ("Snickers", "Mars"), ("M&M's", "Mars"), ("Twix", "Mars"),
    ("Nutella", "Ferrero"), ("Tic Tac", "Ferrero"), ("Kinder", "Ferrero"),
    ("Pringles", "Kellanova"), ("Pop-Tarts", "Kellanova"), ("Corn Flakes", "Kellogg's"), ("Rice Krispies", "Kellogg's"),
    ("Cheerios", "General Mills"), ("Jell-O", "Kraft Heinz"), ("Evian", "Danone"), ("Activia", "Danone"), ("Volvic", "Danone"),
    ("Pampers", "Procter & Gamble"), ("Gillette", "Procter & Gamble"), ("Tide", "Procter & Gamble"),
    ("Pantene", "Procter & Gamble"), ("Oral-B", "Procter & Gamble"), ("Febreze", "Procter & Gamble"),
    ("Old Spice", "Procter & Gamble"), ("Head & Shoulders", "Procter & Gamble"),
    ("Vaseline", "Unilever"), ("Axe", "Unilever"), ("Hellmann's", "Unilever"), ("Knorr", "Unilever"),
    ("Band-Aid", "Kenvue"), ("Listerine", "Kenvue"), ("Tylenol", "Kenvue"), ("Neutrogena", "Kenvue"),
    ("Kleenex", "Kimberly-Clark"), ("Huggies", "Kimberly-Clark"),
    ("Viagra", "Pfizer"), ("Lipitor", "Pfizer"), ("Xanax", "Pfizer"), ("Prozac", "Eli Lilly"), ("Ozempic", "Novo Nordisk"),
    ("Botox", "AbbVie"),
    ("Air Jordan", "Nike"), ("Air Max", "Nike"), ("Stan Smith", "Adidas"),
    ("Barbie", "Mattel"), ("Hot Wheels", "Mattel"), ("Uno", "Mattel"), ("Monopoly", "Hasbro"), ("Play-Doh", "Hasbro"),
    ("Nerf", "Hasbro"), ("Transformers", "Hasbro"), ("Jenga", "Hasbro"), ("Furby", "Hasbro"),
    ("Photoshop", "Adobe"), ("Acrobat", "Adobe"), ("Illustrator", "Adobe"),
    ("Pentium", "Intel"), ("Core i7", "Intel"), ("Ryzen", "AMD"), ("GeForce", "Nvidia"),
    ("ThinkPad", "Lenovo"), ("Inspiron", "Dell"), ("Alienware", "Dell"), ("LaserJet", "HP"),
    ("Firefox", "Mozilla"), ("Thunderbird", "Mozilla"), ("Razr", "Motorola"), ("Roomba", "iRobot"),
    ("Budweiser", "Anheuser-Busch"), ("Stella Artois", "AB InBev"), ("Guinness", "Diageo"), ("Smirnoff", "Diageo"),
    ("Johnnie Walker", "Diageo"), ("Marlboro", "Philip Morris"), ("Ray-Ban", "Luxottica"), ("Oakley", "Luxottica"),
    ("Post-it", "3M"), ("Scotch Tape", "3M"),
    ("Mickey Mouse", "Disney"), ("Toy Story", "Pixar"), ("Shrek", "DreamWorks"),
    ("EOS", "Canon"), ("Coolpix", "Nikon"), ("Instax", "Fujifilm"),
]
PRODUCT_COMPANY_ALTS = {
    "Google": ["Alphabet"], "Meta": ["Facebook", "Meta Platforms"], "Coca-Cola": ["The Coca-Cola Company"],
    "Procter & Gamble": ["P&G"], "Mondelez": ["Mondelez International", "Kraft"], "Kraft Heinz": ["Kraft"],
    "Kellogg's": ["Kellogg", "Kellanova", "WK Kellogg"], "Kellanova": ["Kellogg's", "Kellogg"],
    "Anheuser-Busch": ["AB InBev", "Anheuser-Busch InBev"], "AB InBev": ["Anheuser-Busch InBev", "Anheuser-Busch"],
    "Electronic Arts": ["EA"], "Activision": ["Activision Blizzard", "Microsoft"],
    "Blizzard": ["Activision Blizzard", "Microsoft"], "Pixar": ["Disney"], "Philip Morris": ["Altria"],
    "Luxottica": ["EssilorLuxottica"], "Bandai Namco": ["Namco", "Bandai"], "HP": ["Hewlett-Packard"],
    "Kenvue": ["Johnson & Johnson"], "Rockstar Games": ["Take-Two"], "Snap": ["Snap Inc."],
    "AbbVie": ["Allergan"], "Nestlé": ["Nestle"], "DreamWorks": ["DreamWorks Animation"],
}

# ---------------------------------------------------------------------------------------------
# person -> instrument (hand-written; the instrument each musician is best known for).
PERSON_INSTRUMENT = [
    ("Jimi Hendrix", "guitar"), ("Eric Clapton", "guitar"), ("B.B. King", "guitar"), ("Carlos Santana", "guitar"),
    ("Jimmy Page", "guitar"), ("Eddie Van Halen", "guitar"), ("Slash", "guitar"), ("Chuck Berry", "guitar"),
    ("Django Reinhardt", "guitar"), ("Andrés Segovia", "guitar"), ("Keith Richards", "guitar"),
    ("Stevie Ray Vaughan", "guitar"), ("Brian May", "guitar"), ("Angus Young", "guitar"),
    ("Frédéric Chopin", "piano"), ("Franz Liszt", "piano"), ("Vladimir Horowitz", "piano"), ("Lang Lang", "piano"),
    ("Glenn Gould", "piano"), ("Arthur Rubinstein", "piano"), ("Sergei Rachmaninoff", "piano"),
    ("Thelonious Monk", "piano"), ("Herbie Hancock", "piano"), ("Elton John", "piano"), ("Billy Joel", "piano"),
    ("Alicia Keys", "piano"), ("Ray Charles", "piano"), ("Oscar Peterson", "piano"), ("Art Tatum", "piano"),
    ("Jerry Lee Lewis", "piano"), ("Martha Argerich", "piano"),
    ("Niccolò Paganini", "violin"), ("Itzhak Perlman", "violin"), ("Jascha Heifetz", "violin"),
    ("Yehudi Menuhin", "violin"), ("Joshua Bell", "violin"), ("Anne-Sophie Mutter", "violin"),
    ("Nigel Kennedy", "violin"), ("Hilary Hahn", "violin"), ("Stéphane Grappelli", "violin"), ("Fritz Kreisler", "violin"),
    ("Yo-Yo Ma", "cello"), ("Jacqueline du Pré", "cello"), ("Pablo Casals", "cello"), ("Mstislav Rostropovich", "cello"),
    ("Louis Armstrong", "trumpet"), ("Miles Davis", "trumpet"), ("Dizzy Gillespie", "trumpet"),
    ("Wynton Marsalis", "trumpet"), ("Chet Baker", "trumpet"), ("Chet Atkins", "guitar"),
    ("John Coltrane", "saxophone"), ("Charlie Parker", "saxophone"), ("Sonny Rollins", "saxophone"),
    ("Stan Getz", "saxophone"), ("Kenny G", "saxophone"), ("Coleman Hawkins", "saxophone"),
    ("Benny Goodman", "clarinet"), ("Artie Shaw", "clarinet"),
    ("Ringo Starr", "drums"), ("Buddy Rich", "drums"), ("Keith Moon", "drums"), ("John Bonham", "drums"),
    ("Neil Peart", "drums"), ("Dave Grohl", "drums"), ("Phil Collins", "drums"), ("Travis Barker", "drums"),
    ("Charlie Watts", "drums"), ("Lars Ulrich", "drums"),
    ("Paul McCartney", "bass"), ("Jaco Pastorius", "bass"), ("Flea", "bass"), ("Sting", "bass"),
    ("Geddy Lee", "bass"), ("John Entwistle", "bass"), ("Charles Mingus", "bass"),
    ("Ravi Shankar", "sitar"), ("James Galway", "flute"), ("Jean-Pierre Rampal", "flute"),
    ("Johann Sebastian Bach", "organ"), ("Bob Dylan", "harmonica"), ("Stevie Wonder", "harmonica"),
    ("Earl Scruggs", "banjo"), ("Béla Fleck", "banjo"), ("Lionel Hampton", "vibraphone"),
]

# person -> sport (hand-written; famous athletes).
PERSON_SPORT = [
    ("Lionel Messi", "soccer"), ("Cristiano Ronaldo", "soccer"), ("Pelé", "soccer"), ("Diego Maradona", "soccer"),
    ("Zinedine Zidane", "soccer"), ("David Beckham", "soccer"), ("Johan Cruyff", "soccer"), ("Neymar", "soccer"),
    ("Kylian Mbappé", "soccer"), ("Ronaldinho", "soccer"), ("Thierry Henry", "soccer"), ("Wayne Rooney", "soccer"),
    ("Franz Beckenbauer", "soccer"), ("Mia Hamm", "soccer"), ("Erling Haaland", "soccer"),
    ("Michael Jordan", "basketball"), ("LeBron James", "basketball"), ("Kobe Bryant", "basketball"),
    ("Shaquille O'Neal", "basketball"), ("Stephen Curry", "basketball"), ("Magic Johnson", "basketball"),
    ("Larry Bird", "basketball"), ("Kareem Abdul-Jabbar", "basketball"), ("Dirk Nowitzki", "basketball"),
    ("Wilt Chamberlain", "basketball"), ("Kevin Durant", "basketball"),
    ("Roger Federer", "tennis"), ("Rafael Nadal", "tennis"), ("Novak Djokovic", "tennis"), ("Serena Williams", "tennis"),
    ("Venus Williams", "tennis"), ("Andre Agassi", "tennis"), ("Pete Sampras", "tennis"), ("Steffi Graf", "tennis"),
    ("Björn Borg", "tennis"), ("Martina Navratilova", "tennis"), ("Andy Murray", "tennis"), ("Maria Sharapova", "tennis"),
    ("John McEnroe", "tennis"), ("Billie Jean King", "tennis"),
    ("Tiger Woods", "golf"), ("Jack Nicklaus", "golf"), ("Arnold Palmer", "golf"), ("Rory McIlroy", "golf"),
    ("Phil Mickelson", "golf"), ("Seve Ballesteros", "golf"),
    ("Muhammad Ali", "boxing"), ("Mike Tyson", "boxing"), ("Floyd Mayweather", "boxing"), ("Manny Pacquiao", "boxing"),
    ("Joe Frazier", "boxing"), ("George Foreman", "boxing"), ("Sugar Ray Leonard", "boxing"), ("Rocky Marciano", "boxing"),
    ("Usain Bolt", "athletics"), ("Carl Lewis", "athletics"), ("Jesse Owens", "athletics"), ("Mo Farah", "athletics"),
    ("Michael Phelps", "swimming"), ("Mark Spitz", "swimming"), ("Ian Thorpe", "swimming"), ("Katie Ledecky", "swimming"),
    ("Wayne Gretzky", "ice hockey"), ("Sidney Crosby", "ice hockey"), ("Mario Lemieux", "ice hockey"),
    ("Alexander Ovechkin", "ice hockey"), ("Bobby Orr", "ice hockey"),
    ("Babe Ruth", "baseball"), ("Derek Jeter", "baseball"), ("Jackie Robinson", "baseball"), ("Hank Aaron", "baseball"),
    ("Joe DiMaggio", "baseball"), ("Shohei Ohtani", "baseball"),
    ("Tom Brady", "American football"), ("Peyton Manning", "American football"), ("Joe Montana", "American football"),
    ("Jerry Rice", "American football"), ("Patrick Mahomes", "American football"),
    ("Sachin Tendulkar", "cricket"), ("Don Bradman", "cricket"), ("Virat Kohli", "cricket"), ("Brian Lara", "cricket"),
    ("Shane Warne", "cricket"),
    ("Lewis Hamilton", "Formula One"), ("Michael Schumacher", "Formula One"), ("Ayrton Senna", "Formula One"),
    ("Max Verstappen", "Formula One"), ("Sebastian Vettel", "Formula One"), ("Niki Lauda", "Formula One"),
    ("Simone Biles", "gymnastics"), ("Nadia Comăneci", "gymnastics"), ("Olga Korbut", "gymnastics"),
    ("Lance Armstrong", "cycling"), ("Eddy Merckx", "cycling"), ("Chris Froome", "cycling"),
    ("Garry Kasparov", "chess"), ("Magnus Carlsen", "chess"), ("Bobby Fischer", "chess"),
    ("Tony Hawk", "skateboarding"), ("Shaun White", "snowboarding"), ("Lindsey Vonn", "skiing"),
    ("Jonah Lomu", "rugby"), ("Jonny Wilkinson", "rugby"), ("Valentino Rossi", "motorcycle racing"),
]
PERSON_SPORT_ALTS = {
    "soccer": ["football", "association football"],
    "athletics": ["track and field", "sprinting", "running"],
    "American football": ["football"],
    "Formula One": ["F1", "motor racing", "auto racing"],
    "ice hockey": ["hockey"],
    "motorcycle racing": ["MotoGP"],
    "rugby": ["rugby union"],
}
PERSON_INSTRUMENT_ALTS = {
    "bass": ["bass guitar"],
    "drums": ["drum kit", "drum"],
    "saxophone": ["sax"],
}
